"""Dialogs and the review dock (Qt widgets; no numerics)."""
