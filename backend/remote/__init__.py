"""The backend's job service: one scheduler shared by the stdio server and the network server.

``scheduler`` queues jobs per owner and runs them on one worker thread; the stdio server
(backend/server.py) is its one owner "local". The rest serves it over TLS to many clients
(``python -m backend serve --listen``): ``credentials`` (token, certificate), ``store`` (uploaded
content), ``job_folders`` (server-side job folders), ``connection`` (one client), ``listener``.
"""
