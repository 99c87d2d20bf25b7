"""A real FTP server for the fetch tests: pyftpdlib on 127.0.0.1, a free port, one user.

Usage: ftp_server.py ROOT USER PASSWORD [CERTFILE KEYFILE]. With a certificate and key it
serves FTPS (explicit, AUTH TLS; pyftpdlib's TLS handler needs pyOpenSSL) and refuses logins
that have not secured the control connection. With FTP_WRITE_LIMIT=N in the environment (plain
FTP only) downloads are sent at about N bytes a second. Prints "ftp listening on PORT" when
ready.
"""
import os
import sys

from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.servers import FTPServer

root, user, password = sys.argv[1:4]
authorizer = DummyAuthorizer()
authorizer.add_user(user, password, root, perm="elr")

if len(sys.argv) > 4:
    from pyftpdlib.handlers import TLS_FTPHandler

    class Handler(TLS_FTPHandler):
        pass

    Handler.certfile, Handler.keyfile = sys.argv[4:6]
    Handler.tls_control_required = True
    Handler.tls_data_required = True
else:
    from pyftpdlib.handlers import FTPHandler

    class Handler(FTPHandler):
        pass

    write_limit = int(os.environ.get("FTP_WRITE_LIMIT", "0"))
    if write_limit:
        from pyftpdlib.handlers import ThrottledDTPHandler

        class Throttled(ThrottledDTPHandler):
            pass

        Throttled.write_limit = write_limit
        Handler.dtp_handler = Throttled


Handler.authorizer = authorizer
server = FTPServer(("127.0.0.1", 0), Handler)
print("ftp listening on", server.socket.getsockname()[1], flush=True)
server.serve_forever()
