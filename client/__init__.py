"""The hospital's side (hospital) and the evaluator's tools (evaluator)."""
