"""nnU-Net trainers: one base class owning every integration rule, short per-paper subclasses."""
