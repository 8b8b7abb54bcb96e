"""`nnunet-dino pretrain`: DINOv2-style self-supervised continued pretraining of a registry backbone on
2D slices of the user's own scans (nnU-Net datasets, raw or preprocessed, or folders of unlabelled
images), written as a Meta-layout backbone file that `nnUNet_dino_weights` reads.

data.py (cases and slices) -> augment.py (multi-crop, masks) -> model.py (student/teacher, heads.py)
-> losses.py (DINO, iBOT, KoLeo, Gram) -> recipe.py (hyper-parameters, schedules, parameter groups)
-> loop.py (the run: resume, steps, saving) -> record.py (output file, JSON record, plot, leakage).
"""
