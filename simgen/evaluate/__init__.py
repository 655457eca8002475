"""simgen.evaluate"""
