"""A real FTP server for the fetch tests: pyftpdlib on 127.0.0.1, a free port, one user.

Usage: ftp_server.py ROOT USER PASSWORD. Prints "ftp listening on PORT" when ready.
"""
import sys

from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import FTPServer

root, user, password = sys.argv[1:4]
authorizer = DummyAuthorizer()
authorizer.add_user(user, password, root, perm="elr")


class Handler(FTPHandler):
    pass


Handler.authorizer = authorizer
server = FTPServer(("127.0.0.1", 0), Handler)
print("ftp listening on", server.socket.getsockname()[1], flush=True)
server.serve_forever()
