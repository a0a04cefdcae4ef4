"""The one owner of a run directory: its layout, atomic records, checkpoint, lock, weights
manifest, model card, and the reader and index every other room uses.
"""
