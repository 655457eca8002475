"""Interchange formats: YOLO folders, COCO JSON, MOTChallenge."""
