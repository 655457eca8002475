"""simgen.datasets"""
