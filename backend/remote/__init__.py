"""The backend as a network service (``python -m backend serve --listen``), on the same scheduler
(backend/scheduler.py) the stdio server uses.

``credentials`` (token, certificate), ``store`` (uploaded content), ``job_folders`` (server-side job
folders), ``connection`` (one client), ``listener`` (accepting, the banner, signals).
"""
