"""Farm batches: job folders run on a Ray cluster, one warm engine per GPU (or CPU slot), each job exactly once.

    python -m backend batch --jobs JOBS [--ray auto | --local N] [--out DIR]

``jobs.py`` finds the jobs (a folder of job folders, or a JSON-lines file of requests), ``order.py`` hands them out
so an actor keeps its model family warm, ``worker.py`` is the actor, ``shipping.py`` moves job folders through
Ray when a node does not see the driver's disk, ``batch.py`` drives it all and ``summary.py`` keeps batch.json.
Ray is imported only here: the server and the add-on never need it.
"""
