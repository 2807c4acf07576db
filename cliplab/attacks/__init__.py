"""Input perturbations evaluated with the same cached pipeline (each attacked image set has its own cache keys)."""
from cliplab.attacks.typographic import AttackedSource, TypographicParams, choose_targets, render_text

__all__ = ["AttackedSource", "TypographicParams", "choose_targets", "render_text"]
