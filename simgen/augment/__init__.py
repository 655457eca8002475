"""simgen.augment"""
