"""Evaluation: per-case and per-class Dice, HD95 and ASD in millimetres, for arrays and folders."""
from .folders import evaluate_folders, format_class_table
from .metrics import (EvaluatedClass, binary_metrics, case_metrics, classes_from_labels, ignore_label_from_labels,
                      summarise, surface_distances)

__all__ = ["EvaluatedClass", "binary_metrics", "case_metrics", "classes_from_labels", "evaluate_folders",
           "format_class_table", "ignore_label_from_labels", "summarise", "surface_distances"]
