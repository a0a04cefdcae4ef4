"""Machine learning shared by every side: networks by name, plain PyTorch training and
evaluation loops, metrics, DP accounting, device and seeding.
"""
