"""Datasets. Submodules are imported explicitly (``import segda.data.synthetic``), so importing
``segda.data`` stays cheap."""
