"""`DinoPredictor`: nnU-Net's predictor, with the folds of an ensemble sharing one frozen encoder.

nnU-Net's `nnUNetPredictor` loads each fold's weights and runs the whole sliding window again, with
every mirror, per fold. Here the loops turn inside out: per batch of tiles and per mirror the folds'
networks run one after the other around one `SharedEncoder`, so the encoder runs once for all folds.
Everything else is nnU-Net's own: preprocessing, slicers, Gaussian, export (inherited), and the
arithmetic, op for op -- each fold's logits are accumulated in fp16 tile by tile, divided by the same
Gaussian sum, then the folds are summed in fold order and divided, as `predict_logits_from_preprocessed_data`
does -- so the result equals nnU-Net's for the same folds. Where the folds cannot share (sharing.py),
each fold runs its own sliding window, as nnU-Net does.

One difference on purpose: a 2.5D slab model that records a step along z (training/slab.py) is tiled at
that step along z, where nnU-Net's single `step_size` predicts each slice about twice.

Tiles go through the networks `tile_batch` at a time (`default_tile_batch`); the accumulation stays
tile by tile, in nnU-Net's order.
"""
from __future__ import annotations

import itertools
from typing import List, Optional, Sequence

import torch
from acvl_utils.cropping_and_padding.padding import pad_nd_image
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.inference.sliding_window_prediction import compute_gaussian
from nnunetv2.configuration import default_num_processes
from nnunetv2.utilities.helpers import dummy_context, empty_cache
from torch import nn
from torch._dynamo import OptimizedModule
from tqdm import tqdm

from ..training.slab import recorded_slicers
from .sharing import SharedEncoder, Sharing, encoder_sharing, fold_networks

#: tiles per network call: CUDA runs small tiles faster in batches; a CPU gains nothing measurable
#: (documentation/prediction.md) and one tile keeps the result bit-identical to nnU-Net's
DEFAULT_TILE_BATCH = {"cuda": 4}


def default_tile_batch(device: torch.device) -> int:
    return DEFAULT_TILE_BATCH.get(device.type, 1)


def _plain(network: nn.Module) -> nn.Module:
    return network._orig_mod if isinstance(network, OptimizedModule) else network


class DinoPredictor(nnUNetPredictor):
    """`nnUNetPredictor` with one encoder forward per tile and mirror for all folds (where they can share)
    and tiles in batches. Use it as nnU-Net's: `initialize_from_trained_model_folder`, then
    `predict_from_files`, `predict_single_npy_array` or `predict_logits_from_preprocessed_data`."""

    def __init__(self, *args, tile_batch: Optional[int] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.tile_batch = tile_batch or default_tile_batch(self.device)
        if self.tile_batch < 1:
            raise ValueError(f"tile_batch must be >= 1, got {self.tile_batch}")
        self.sharing: Sharing = Sharing(False, "not initialised")
        self.fold_networks: Optional[List[nn.Module]] = None

    # --- initialisation: nnU-Net's, then the fold networks ------------------------------------------
    def initialize_from_trained_model_folder(self, model_training_output_dir: str, use_folds,
                                             checkpoint_name: str = "checkpoint_final.pth"):
        super().initialize_from_trained_model_folder(model_training_output_dir, use_folds, checkpoint_name)
        self._prepare_folds()

    def manual_initialization(self, network, plans_manager, configuration_manager, parameters, dataset_json,
                              trainer_name, inference_allowed_mirroring_axes):
        super().manual_initialization(network, plans_manager, configuration_manager, parameters, dataset_json,
                                      trainer_name, inference_allowed_mirroring_axes)
        self._prepare_folds()

    def _prepare_folds(self) -> None:
        network = _plain(self.network)
        self.sharing = encoder_sharing(network, self.list_of_parameters)
        self.fold_networks = fold_networks(network, self.list_of_parameters) if self.sharing.shared else None
        if self.list_of_parameters and len(self.list_of_parameters) > 1:
            print(self.sharing.line(len(self.list_of_parameters)))

    def _internal_get_sliding_window_slicers(self, image_size):
        slab = recorded_slicers(self.configuration_manager, image_size, self.tile_step_size)
        return super()._internal_get_sliding_window_slicers(image_size) if slab is None else slab

    # --- the folds ---------------------------------------------------------------------------------
    @torch.inference_mode()
    def predict_logits_from_preprocessed_data(self, data: torch.Tensor) -> torch.Tensor:
        """nnU-Net's fold ensemble (sum in fold order, then divide), from one shared sliding window where
        the folds share the encoder, else from one sliding window per fold."""
        n_threads = torch.get_num_threads()
        torch.set_num_threads(default_num_processes if default_num_processes < n_threads else n_threads)
        try:
            if self.fold_networks is not None:
                per_fold = iter(self.predict_sliding_window_per_fold(data, self.fold_networks))
            else:
                per_fold = (self._one_fold(data, params) for params in self.list_of_parameters)
            prediction = None
            for logits in per_fold:
                if prediction is None:
                    prediction = logits.to("cpu")
                else:
                    prediction += logits.to("cpu")
            if len(self.list_of_parameters) > 1:
                prediction /= len(self.list_of_parameters)
            return prediction
        finally:
            torch.set_num_threads(n_threads)

    def _one_fold(self, data: torch.Tensor, params: dict) -> torch.Tensor:
        _plain(self.network).load_state_dict(params)
        return self.predict_sliding_window_return_logits(data)

    @torch.inference_mode()
    def predict_sliding_window_return_logits(self, input_image: torch.Tensor) -> torch.Tensor:
        """nnU-Net's contract (the current network's logits of one case), with tiles in batches."""
        return self.predict_sliding_window_per_fold(input_image, [self.network])[0]

    @torch.inference_mode()
    def predict_sliding_window_per_fold(self, input_image: torch.Tensor, networks: Sequence[nn.Module]
                                        ) -> List[torch.Tensor]:
        """Each network's sliding-window logits of one (C, [Z,] Y, X) case, as nnU-Net's
        `predict_sliding_window_return_logits` computes them for one network."""
        assert isinstance(input_image, torch.Tensor) and input_image.ndim == 4, \
            "input_image must be a 4D torch.Tensor (c, x, y, z)"
        for network in networks:
            network.to(self.device).eval()
        empty_cache(self.device)
        with torch.autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context():
            data, revert_padding = pad_nd_image(input_image, self.configuration_manager.patch_size, "constant",
                                                {"value": 0}, True, None)
            slicers = self._internal_get_sliding_window_slicers(data.shape[1:])
            if self.perform_everything_on_device and self.device.type != "cpu":
                try:
                    logits = self._sliding_window(data, slicers, networks, True)
                except RuntimeError:  # out of memory on the device: results on the CPU, as nnU-Net falls back
                    print("Prediction on device was unsuccessful, probably due to a lack of memory. "
                          "Moving results arrays to CPU")
                    empty_cache(self.device)
                    logits = self._sliding_window(data, slicers, networks, False)
            else:
                logits = self._sliding_window(data, slicers, networks, self.perform_everything_on_device)
            empty_cache(self.device)
            return [fold[(slice(None), *revert_padding[1:])] for fold in logits]

    def _sliding_window(self, data: torch.Tensor, slicers, networks: Sequence[nn.Module], on_device: bool
                        ) -> List[torch.Tensor]:
        """nnU-Net's `_internal_predict_sliding_window_return_logits` for several networks: per fold an fp16
        accumulator, one Gaussian sum, tiles added in slicer order."""
        results_device = self.device if on_device else torch.device("cpu")
        data = data.to(results_device)
        heads = self.label_manager.num_segmentation_heads
        logits = [torch.zeros((heads, *data.shape[1:]), dtype=torch.half, device=results_device) for _ in networks]
        n_predictions = torch.zeros(data.shape[1:], dtype=torch.half, device=results_device)
        gaussian = compute_gaussian(tuple(self.configuration_manager.patch_size), sigma_scale=1. / 8,
                                    value_scaling_factor=10, device=results_device) if self.use_gaussian else 1
        with tqdm(total=len(slicers), disable=not self.allow_tqdm) as progress:
            for start in range(0, len(slicers), self.tile_batch):
                batch = slicers[start:start + self.tile_batch]
                tiles = torch.cat([data[s][None] for s in batch]).to(self.device, memory_format=torch.contiguous_format)
                predictions = self._mirror_and_predict_folds(tiles, networks)
                for index, sl in enumerate(batch):
                    for fold, prediction in zip(logits, predictions):
                        tile = prediction[index].to(results_device)
                        if self.use_gaussian:
                            tile *= gaussian
                        fold[sl] += tile
                    n_predictions[sl[1:]] += gaussian
                progress.update(len(batch))
        for fold in logits:
            torch.div(fold, n_predictions, out=fold)
            if torch.any(torch.isinf(fold)):
                raise RuntimeError("Encountered inf in predicted array. Aborting... If this problem persists, reduce "
                                   "value_scaling_factor in compute_gaussian or increase the dtype of "
                                   "predicted_logits to fp32")
        return logits

    def _mirror_and_predict_folds(self, x: torch.Tensor, networks: Sequence[nn.Module]) -> List[torch.Tensor]:
        """nnU-Net's `_internal_maybe_mirror_and_predict` for each network, mirror by mirror, so the folds ask
        the shared encoder for the same (mirrored) tiles one after the other."""
        mirror_axes = self.allowed_mirroring_axes if self.use_mirroring else None
        predictions = [network(x) for network in networks]
        if mirror_axes is not None:
            assert max(mirror_axes) <= x.ndim - 3, "mirror_axes does not match the dimension of the input!"
            axes = [m + 2 for m in mirror_axes]
            combinations = [c for i in range(len(axes)) for c in itertools.combinations(axes, i + 1)]
            for flip in combinations:
                mirrored = torch.flip(x, flip)
                for prediction, network in zip(predictions, networks):
                    prediction += torch.flip(network(mirrored), flip)
            for prediction in predictions:
                prediction /= (len(combinations) + 1)
        for encoder in {id(n.backbone): n.backbone for n in networks if isinstance(getattr(n, "backbone", None),
                                                                                    SharedEncoder)}.values():
            encoder.forget()
        return predictions
