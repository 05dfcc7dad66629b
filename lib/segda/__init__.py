"""segda: unsupervised domain adaptation for semantic segmentation, in one small package.

Importing the package has no side effects; submodules are imported explicitly
(``import segda.models``, ``segda.train``, ...).
"""

__version__ = "0.1.0"
