"""Dataset builders in nnU-Net raw format."""
