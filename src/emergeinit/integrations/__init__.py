"""Optional integrations with training frameworks; each module imports its framework itself.

* :mod:`emergeinit.integrations.lightning`: :class:`EmergenceCallback` for Lightning
  (``pip install emergeinit[lightning]``).
"""
