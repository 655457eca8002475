"""simgen.simulate"""
