"""Staff UI: the Storages page (state, space, instances; add and disable for admins), the Tasks page (weekly grid,
running and recent tasks with progress and last error) and the e-mail page with its "send test mail" button."""

from __future__ import annotations

import email
import subprocess
import sys
from pathlib import Path

from appliance.maintenance.tasks import TaskStore

from conftest import free_port

SINK = Path(__file__).resolve().parent.parent / "smtp_sink.py"


def test_storages_page_lists_state_space_and_instances(env, admin) -> None:
    page = admin.get("/staff/storages").get_data(as_text=True)
    assert 'data-storage="0"' in page and str(env.cfg.store_dir) in page
    assert ">enabled<" in page
    count = env.app.index.counts()["instances"]
    assert f'<td class="num">{count} (' in page


def test_admin_adds_and_disables_a_storage(env, admin, tmp_path: Path) -> None:
    folder = tmp_path / "second"
    csrf = env.csrf(admin, "/staff/storages")
    done = admin.post("/staff/storages", data={"path": str(folder), "limit_mb": "100", "csrf_token": csrf})
    assert done.status_code == 302
    numbers = [s.number for s in env.app.store_area.all()]
    assert len(numbers) == 2 and (folder / ".appliance-storage").is_file()
    added = env.app.store_area.get(numbers[1])
    assert added.enabled and added.free_space_limit_mb == 100
    done = admin.post(f"/staff/storages/{numbers[1]}/disable", data={"csrf_token": csrf})
    assert done.status_code == 302 and not env.app.store_area.get(numbers[1]).enabled
    page = admin.get("/staff/storages").get_data(as_text=True)
    assert ">disabled<" in page
    relative = admin.post("/staff/storages", data={"path": "relative/x", "limit_mb": "1", "csrf_token": csrf})
    assert relative.status_code == 400 and "absolute" in relative.get_data(as_text=True)
    actions = [e.action for e in env.site.audit.entries()]
    assert "storage.add" in actions and "storage.disable" in actions


def test_front_desk_sees_storages_but_cannot_change_them(env, desk) -> None:
    page = desk.get("/staff/storages")
    assert page.status_code == 200 and "Add a storage" not in page.get_data(as_text=True)
    csrf = env.csrf(desk, "/staff/storages")
    assert desk.post("/staff/storages/0/disable", data={"csrf_token": csrf}).status_code == 403
    assert desk.post("/staff/storages", data={"path": "/x", "csrf_token": csrf}).status_code == 403
    assert env.app.store_area.get(0).enabled


def test_tasks_page_shows_grid_progress_and_errors(env, desk) -> None:
    store = TaskStore(env.app.db)
    series = [r[0] for r in env.app.db.conn.execute("SELECT series_uid FROM series")]
    task = store.create("archiving", series, "compress to rle", "rle")
    assert task is not None
    store.start(task)
    store.item_done(task, series[0], "failed", "codec exploded")
    page = desk.get("/staff/tasks").get_data(as_text=True)
    assert 'id="kind-archiving"' in page and 'id="kind-deletion"' in page
    # The default windows: every day 22:00-06:00 for archiving and deletion, all week for forwarding.
    assert page.count('class="open"') == 2 * 7 * 8 + 7 * 24
    assert 'id="kind-forwarding"' in page
    assert f'data-task="{task}"' in page and f"1 of {len(series)} series" in page
    assert "codec exploded" in page


def test_email_page_masks_the_password_and_sends_a_test_mail(env_factory, tmp_path: Path) -> None:
    port = free_port()
    folder = tmp_path / "mail"
    sink = subprocess.Popen([sys.executable, str(SINK), str(port), str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert sink.stdout is not None and sink.stdout.readline().strip() == "ready"
        env = env_factory()
        env.cfg = _with_email(env.site.config, port)
        # The rooms that read [email]: the e-mail page's and the settings page's.
        env.site.config = env.site.upkeep.config = env.site.admin.config = env.cfg
        admin = env.client()
        env.login(admin)
        page = admin.get("/staff/email").get_data(as_text=True)
        assert "s3cret-mail-pw" not in page and "••••••" in page
        assert "s3cret-mail-pw" not in admin.get("/staff/settings").get_data(as_text=True)
        done = admin.post("/staff/email", data={"csrf_token": env.csrf(admin, "/staff/email")})
        assert done.status_code == 302
        assert "Test mail sent" in admin.get("/staff/email").get_data(as_text=True)
        (mail,) = [email.message_from_bytes(p.read_bytes()) for p in folder.glob("*.eml")]
        assert mail["Subject"] == "appliance test mail"
    finally:
        sink.terminate()
        sink.wait(20)


def _with_email(cfg, port: int):
    from dataclasses import replace

    from appliance.config import EmailConfig

    return replace(
        cfg,
        email=EmailConfig(
            "127.0.0.1",
            port,
            "none",
            user="",
            password="s3cret-mail-pw",
            sender="appliance@example.org",
            to=("desk@example.org",),
        ),
    )
