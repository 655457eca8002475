"""simgen.train"""
