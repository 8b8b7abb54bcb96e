"""nnunet-dino: frozen DINOv2/DINOv3 foundation encoders inside stock nnU-Net v2.

Kept import-light on purpose: the site-packages startup hook imports `nnunet_dino._autoregister`
in every Python process, so nothing here may import torch.
"""
__version__ = "0.1.0"
