# Socket.IO on the server: python-socketio with gevent, in front of the Pyramid app.
from gevent import monkey

monkey.patch_all()  # before pyramid, redis, pymongo: every blocking call yields to gevent

import socketio  # noqa: E402
from pyramid.config import Configurator  # noqa: E402

sio = socketio.Server(async_mode="gevent")


@sio.event
def connect(sid, environ, auth=None):
    print("Socket.IO client connected", sid)
    sio.emit("connected", {"hello": "world"}, to=sid)


def main(global_config, **settings):
    with Configurator(settings=settings) as config:
        config.add_static_view("static", "foo:static")
        pyramid_app = config.make_wsgi_app()
    return socketio.WSGIApp(sio, pyramid_app)
