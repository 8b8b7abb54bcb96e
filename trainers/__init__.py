"""The folder nnU-Net scans (`nnUNet_extTrainer`). Keep it thin: one shim module re-exports the
trainer classes from `nnunet_dino.training`, so they keep an importable, picklable module path."""
