"""The ground every other package stands on: the 17-joint skeleton, crop and camera
geometry, reading pickles without running code, shared errors.

May import nothing of ``common``.
"""
