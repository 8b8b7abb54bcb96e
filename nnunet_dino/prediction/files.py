"""A prediction folder written as `nnUNetv2_predict` writes it, but never half-written.

nnU-Net's export workers write each case straight into the output folder, so a killed run can leave a
truncated segmentation that `--continue_prediction` then takes for a finished one. Here nnU-Net writes
into a hidden staging folder beside the outputs, and finished files are moved into place (a rename on
the same file system) when the run ends; a later run removes what a killed one left staged.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch

from ..cpu_threads import usable_cores
from ..errors import MissingInputError, OptionError
from .predictor import DinoPredictor

#: what nnU-Net writes beside the segmentations of a prediction folder
FOLDER_FILES = ("dataset.json", "plans.json", "predict_from_raw_data_args.json")


@dataclass(frozen=True)
class PredictionRequest:
    """What `nnunet-dino predict` was asked (nnUNetv2_predict's options, plus `tile_batch`)."""
    model_folder: str
    input_folder: str
    output_folder: str
    folds: Sequence = (0, 1, 2, 3, 4)
    checkpoint: str = "checkpoint_final.pth"
    step_size: float = 0.5
    mirroring: bool = True
    save_probabilities: bool = False
    continue_prediction: bool = False
    device: str = "cuda"
    processes_preprocessing: int = 3
    processes_export: int = 3
    tile_batch: Optional[int] = None
    num_parts: int = 1
    part_id: int = 0
    verbose: bool = False
    progress_bar: bool = True


def check_request(request: PredictionRequest) -> None:
    """Every input there, every option usable, before anything is loaded or written."""
    if not os.path.isdir(request.model_folder):
        raise MissingInputError(f"no model folder {request.model_folder} (train it, or give -m MODEL_FOLDER)")
    missing = [f"fold_{f}/{request.checkpoint}" for f in request.folds
               if not os.path.isfile(os.path.join(request.model_folder, f"fold_{f}", request.checkpoint))]
    if missing:
        raise MissingInputError(f"{request.model_folder} lacks {', '.join(missing)}: train those folds, or choose the "
                                f"folds that exist with -f (and the checkpoint with -chk)")
    if not os.path.isdir(request.input_folder):
        raise MissingInputError(f"no input folder {request.input_folder}")
    if not 0 < request.step_size <= 1:
        raise OptionError(f"-step_size must be in (0, 1], got {request.step_size}")
    if request.tile_batch is not None and request.tile_batch < 1:
        raise OptionError(f"--tile-batch must be >= 1, got {request.tile_batch}")
    if not 0 <= request.part_id < request.num_parts:
        raise OptionError(f"-part_id must be in [0, -num_parts), got {request.part_id} of {request.num_parts}")
    if request.device == "cuda" and not torch.cuda.is_available():
        raise OptionError("-device cuda, but torch sees no CUDA device: use -device cpu")
    if request.device not in ("cpu", "cuda", "mps"):
        raise OptionError(f"-device must be cpu, cuda or mps, got {request.device!r}")


def make_predictor(request: PredictionRequest) -> DinoPredictor:
    """The predictor, set up as nnUNetv2_predict sets up nnU-Net's (threads as it chooses them)."""
    if request.device == "cpu":
        torch.set_num_threads(usable_cores())  # nnUNetv2_predict's cpu_count() less the cores it may not use
    elif request.device == "cuda":
        torch.set_num_threads(1)  # as nnUNetv2_predict: CPU threads do not help a GPU run
    predictor = DinoPredictor(tile_step_size=request.step_size, use_gaussian=True, use_mirroring=request.mirroring,
                              perform_everything_on_device=True, device=torch.device(request.device),
                              verbose=request.verbose, verbose_preprocessing=request.verbose,
                              allow_tqdm=request.progress_bar, tile_batch=request.tile_batch)
    predictor.initialize_from_trained_model_folder(request.model_folder, list(request.folds), request.checkpoint)
    return predictor


def _outputs(case: str, folder: str, file_ending: str, probabilities: bool) -> List[str]:
    return [os.path.join(folder, case + e) for e in (file_ending, *((".npz", ".pkl") if probabilities else ()))]


def predict_folder(request: PredictionRequest) -> List[str]:
    """Predict every case of the input folder (this part of it) not finished yet; returns the case ids written."""
    from nnunetv2.utilities.utils import create_lists_from_splitted_dataset_folder
    check_request(request)
    predictor = make_predictor(request)
    ending = predictor.dataset_json["file_ending"]
    cases = create_lists_from_splitted_dataset_folder(request.input_folder, ending)[request.part_id::request.num_parts]
    if not cases:
        raise MissingInputError(f"no images ending in _XXXX{ending} in {request.input_folder}")
    ids = [os.path.basename(c[0])[:-(len(ending) + 5)] for c in cases]
    os.makedirs(request.output_folder, exist_ok=True)
    if request.continue_prediction:
        todo = [i for i, case in enumerate(ids) if not all(
            os.path.isfile(f) for f in _outputs(case, request.output_folder, ending, request.save_probabilities))]
        cases, ids = [cases[i] for i in todo], [ids[i] for i in todo]
    staging = os.path.join(request.output_folder, f".nnunet_dino_partial_{request.part_id}")
    shutil.rmtree(staging, ignore_errors=True)  # what a killed run left
    os.makedirs(staging)
    try:
        staged = [os.path.join(staging, i) for i in ids]
        if cases and request.processes_preprocessing == request.processes_export == 0:  # as nnUNetv2_predict
            predictor.predict_from_files_sequential(cases, staged, request.save_probabilities, overwrite=True)
        elif cases:
            predictor.predict_from_files(cases, staged, save_probabilities=request.save_probabilities, overwrite=True,
                                         num_processes_preprocessing=request.processes_preprocessing,
                                         num_processes_segmentation_export=request.processes_export)
        for name in FOLDER_FILES:
            if os.path.isfile(os.path.join(staging, name)):
                os.replace(os.path.join(staging, name), os.path.join(request.output_folder, name))
        for case in ids:
            for staged, final in zip(_outputs(case, staging, ending, request.save_probabilities),
                                     _outputs(case, request.output_folder, ending, request.save_probabilities)):
                os.replace(staged, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ids
