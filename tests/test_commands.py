"""The management commands `make run` and Compose rely on."""

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import OperationalError

from routing.models import Backend, HostRule, PathRule, Pool

pytestmark = pytest.mark.django_db


def test_load_demo_routes_fills_an_empty_table():
    call_command("load_demo_routes", verbosity=0)
    assert sorted(Pool.objects.values_list("name", flat=True)) == ["apple", "mango"]
    assert Backend.objects.count() == 4
    assert sorted(str(rule) for rule in HostRule.objects.all()) == [
        "www.apple.com → apple",
        "www.mango.com → mango",
    ]
    assert sorted(str(rule) for rule in PathRule.objects.all()) == [
        "/apple (any host) → apple",
        "/mango (any host) → mango",
    ]


def test_load_demo_routes_never_undoes_an_admin_edit():
    call_command("load_demo_routes", verbosity=0)
    HostRule.objects.filter(host="www.mango.com").delete()
    Pool.objects.filter(name="apple").update(read_timeout=5)
    call_command("load_demo_routes", verbosity=0)
    assert not HostRule.objects.filter(host="www.mango.com").exists()
    assert Pool.objects.get(name="apple").read_timeout == 5


def test_compose_variant_points_at_the_service_names():
    call_command("load_demo_routes", "fruit_routes_compose", verbosity=0)
    assert sorted(Backend.objects.values_list("url", flat=True)) == [
        "http://apple1:9081",
        "http://apple2:9082",
        "http://mango1:8081",
        "http://mango2:8082",
    ]


def test_ensure_admin_prints_a_generated_password_once(capsys, monkeypatch):
    monkeypatch.delenv("ADMIN_PASSWORD", raising=False)
    call_command("ensure_admin")
    password = capsys.readouterr().out.strip().rsplit(" ", 1)[1]
    user = get_user_model().objects.get(username="admin")
    assert user.is_superuser and user.check_password(password)
    call_command("ensure_admin")
    assert "nothing to do" in capsys.readouterr().out
    assert get_user_model().objects.count() == 1


def test_ensure_admin_takes_the_password_from_the_environment(capsys, monkeypatch):
    monkeypatch.setenv("ADMIN_PASSWORD", "from-the-environment")
    call_command("ensure_admin", username="boss")
    assert "from-the-environment" not in capsys.readouterr().out
    assert get_user_model().objects.get(username="boss").check_password("from-the-environment")


def test_a_failed_round_of_a_loop_is_logged_and_the_next_one_runs(caplog):
    # healthcheck --loop and certificates --loop: a database hiccup must not end them.
    from routing.management.loop import run_rounds

    rounds = []

    def one_round():
        rounds.append(len(rounds))
        if len(rounds) == 1:
            raise OperationalError("the database went away")
        if len(rounds) == 3:
            raise KeyboardInterrupt  # Ctrl-C ends the loop quietly

    run_rounds(one_round, pause=0, what="Test round")
    assert rounds == [0, 1, 2]
    assert [record.getMessage() for record in caplog.records] == ["Test round failed; trying again"]
