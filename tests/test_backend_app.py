"""The demo backend under gunicorn, as `APP=mango gunicorn backend_app.wsgi` runs it."""

import hashlib

import pytest
import requests


@pytest.fixture
def mango_url(demo_backends):
    return demo_backends["mango"][0]


@pytest.mark.parametrize("path", ["/", "/anything", "/deep/path?x=1", "/echoes"])
def test_any_path_says_which_application_it_is(mango_url, path):
    result = requests.get(mango_url + path, timeout=5)
    assert result.status_code == 200
    assert result.text == "This is the mango application."


def test_healthcheck_answers_200(mango_url):
    result = requests.get(mango_url + "/healthcheck", timeout=5)
    assert (result.status_code, result.text) == (200, "OK")


def test_echo_describes_exactly_what_arrived(mango_url):
    body = bytes(range(256)) * 100
    result = requests.put(
        mango_url + "/echo/sub/path?b=2&a=1&a=",
        data=body,
        headers={"X-First": "1", "X-Second": "2"},
        timeout=5,
    )
    seen = result.json()
    assert result.headers["Content-Type"] == "application/json"
    assert seen["app"] == "mango"
    assert seen["method"] == "PUT"
    assert seen["path"] == "/echo/sub/path"
    assert seen["query"] == "b=2&a=1&a="
    assert seen["body_length"] == len(body)
    assert seen["body_sha256"] == hashlib.sha256(body).hexdigest()
    names = [name for name, _value in seen["headers"]]
    assert names.index("X-First") < names.index("X-Second")
    assert ["Content-Length", str(len(body))] in seen["headers"]
