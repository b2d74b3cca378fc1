"""The tutorial's six tests, adapted only where Django's test client differs from Flask's.

`result.content` stands for Flask's `result.data`; the `client` fixture sends
Host: localhost as Flask's client does; `fruit_routes` supplies the rules and
real backends.
"""

import pytest

pytestmark = pytest.mark.usefixtures("fruit_routes")


def test_host_routing_mango(client):
    result = client.get("/", headers={"Host": "www.mango.com"})
    assert b"This is the mango application." in result.content


def test_host_routing_apple(client):
    result = client.get("/", headers={"Host": "www.apple.com"})
    assert b"This is the apple application." in result.content


def test_host_routing_notfound(client):
    result = client.get("/", headers={"Host": "www.notmango.com"})
    assert b"Not Found" in result.content
    assert 404 == result.status_code


def test_path_routing_mango(client):
    result = client.get("/mango")
    assert b"This is the mango application." in result.content


def test_path_routing_apple(client):
    result = client.get("/apple")
    assert b"This is the apple application." in result.content


def test_path_routing_notfound(client):
    result = client.get("/notmango")
    assert b"Not Found" in result.content
    assert 404 == result.status_code
