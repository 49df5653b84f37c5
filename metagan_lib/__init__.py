"""metagan_lib: the training core behind the metagan notebooks.

Modules: ``data`` (datasets and the seen/unseen split), ``tasks`` (episode sampling on the
device), ``models``, ``losses``, ``augment``, ``train`` (the plain GAN trainer), ``profiles``
(smoke/full settings), ``plotting``, ``runtime`` (device and seeds), ``reproduce`` (the
papermill runner).
"""

__version__ = "0.3.0"
