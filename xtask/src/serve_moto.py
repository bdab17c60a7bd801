# The local AWS emulator: moto's whole server (every service on one port),
# serving one request at a time.
#
# `moto_server` serves requests on threads, and moto's DynamoDB checks a
# condition and then writes without a lock, so two concurrent conditional
# writes could both succeed, which DynamoDB never allows. Served one at a
# time, every conditional write is atomic, as in DynamoDB.
#
# usage: python3 serve_moto.py HOST PORT [--exit-with-stdin]
# With --exit-with-stdin the server exits when its stdin closes, so a test
# binary that started it takes it along however it exits.
import logging
import os
import sys
import threading

from werkzeug.serving import run_simple
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

host, port = sys.argv[1], int(sys.argv[2])
if "--exit-with-stdin" in sys.argv[3:]:
    threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
logging.getLogger("werkzeug").setLevel(logging.WARNING)
run_simple(host, port, DomainDispatcherApplication(create_backend_app), threaded=False)
