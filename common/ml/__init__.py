"""Machine learning shared by every side: networks, loops, metrics, DP accounting, runtime.

Networks by name, plain PyTorch training and evaluation loops (no Flower types),
classification metrics, differential-privacy accounting, device choice and seeding.
"""
