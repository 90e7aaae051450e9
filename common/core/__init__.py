"""The ground every other package stands on: the 17-joint skeleton, crop and camera
geometry, and reading pickles without running code. Imports nothing of ``common``.
"""
