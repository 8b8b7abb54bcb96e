"""Bring a user's own images and masks into nnU-Net's raw format (`nnunet-dino onboard`)."""
from .build import OnboardingResult, onboard
from .checks import OnboardingError
from .summary import format_summary

__all__ = ["OnboardingError", "OnboardingResult", "format_summary", "onboard"]
