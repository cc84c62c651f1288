"""The dashboard's Hosts and Alerts views in Chromium, on a gateway fed with samples and alerts we write:
a card per machine with sparklines, open and resolved alerts with what to do, the health strip's count,
and a desktop notification of a new alert once the user turned them on."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from contracts import events as ev
from contracts.base import utcnow
from contracts.telemetry import DiskFigures, GpuFigures, HostSample, ProcessFigures
from eventstore.telemetry import publish_sample
from tests.e2e import test_dashboard_live as live
from tests.e2e.conftest import DESKTOP, PHONE, sign_in
from tests.integration.gateway_support import Stack

# The fed gateway of the live dashboard tests (its fixture, shared by name), and its marks and waits.
stack, pytestmark, expect = live.stack, live.pytestmark, live.expect

# Records what the page asks to show, whichever way it asks (the service worker's or the window's API).
RECORD_NOTIFICATIONS = """
window.__notes = [];
const record = (title, options) => window.__notes.push({title, body: options && options.body});
if (window.ServiceWorkerRegistration) {
  ServiceWorkerRegistration.prototype.showNotification = async function (title, options) { record(title, options); };
}
const Original = window.Notification;
window.Notification = function (title, options) { record(title, options); };
window.Notification.requestPermission = () => Original.requestPermission();
Object.defineProperty(window.Notification, 'permission', {get: () => Original.permission});
"""


def box(cpu: float, at) -> HostSample:
    return HostSample(host_id="box", hostname="box.lan", cpu_percent=cpu, memory_percent=40.0 + cpu / 4, at=at,
                      load=(1.5, 1.2, 0.9), swap_percent=3.0,
                      disks=(DiskFigures(path="/data", percent=55.0, free_bytes=10**11, total_bytes=2 * 10**11,
                                         full_in_h=30.0),),
                      processes=(ProcessFigures(pid=4242, name="stoker-train", cpu_percent=97.0, rss_bytes=2 * 10**9,
                                                threads=12, open_files=40),),
                      gpus=(GpuFigures(index=0, name="H100", utilization_percent=cpu, temperature_c=60 + cpu / 5,
                                       memory_used_bytes=30 * 2**30, memory_total_bytes=80 * 2**30, power_w=310.0),))


async def feed(stack: Stack) -> None:
    now = utcnow()
    for i, cpu in enumerate((20.0, 55.0, 35.0, 80.0, 60.0, 92.0)):
        await publish_sample(stack.nc, stack.topology, "host", "box", box(cpu, now - timedelta(seconds=50 - i * 10)))
    quiet = HostSample(host_id="quiet", hostname="quiet.lan", cpu_percent=5.0, memory_percent=10.0,
                       at=now - timedelta(minutes=5), gpu_note="no GPU figures: nvidia-ml-py is not installed")
    await publish_sample(stack.nc, stack.topology, "host", "quiet", quiet)
    events = [
        ev.AlertRaised(alert_id="a-old", rule="memory_high", target_kind="host", target="box", value=91.0,
                       threshold=85.0, message="memory_percent 91.0 > 85 for 60s", raised_at=now - timedelta(hours=2)),
        ev.AlertResolved(alert_id="a-old", value=60.0, resolved_at=now - timedelta(hours=1)),
        ev.AlertRaised(alert_id="a-cpu", rule="cpu_high", target_kind="host", target="box", value=92.0,
                       threshold=80.0, message="cpu_percent 92.0 > 80 for 300s", raised_at=now - timedelta(minutes=3)),
        ev.JobStalled(alert_id="a-stall", job_id="01JSTALLEDJOB", worker_id="box", stall_after_s=600.0,
                      raised_at=now - timedelta(minutes=1)),
    ]
    for event in events:
        await stack.log.append("alert", event.alert_id, [event])
    await stack.nc.flush()
    await stack.projected()


async def test_hosts_and_alerts_views_with_a_notification_of_a_new_alert(stack: Stack, browser,
                                                                         artifacts: Path) -> None:
    await feed(stack)
    page = await sign_in(browser, stack.url, stack.tokens["admin"], **DESKTOP)
    await page.context.grant_permissions(["notifications"], origin=stack.url)
    await page.context.add_init_script(RECORD_NOTIFICATIONS)
    await page.reload()
    await expect(page.get_by_role("heading", name="Jobs", exact=True)).to_be_visible()

    await page.get_by_role("link", name="Hosts").click()
    card = page.locator("article.host[data-host='box']")
    await expect(card).to_contain_text("box.lan")
    await expect(card).to_contain_text("H100")
    await expect(card).to_contain_text("stoker-train (4242) 97% CPU")
    await expect(card.locator("svg.spark polyline")).to_have_count(4)  # CPU, memory, disk, GPU over the hour
    assert "6 samples" in await card.locator("svg.spark").first.get_attribute("aria-label")
    await expect(page.locator("article.host[data-host='quiet'] .badge")).to_have_text("silent")
    await expect(page.locator(".health")).to_contain_text("2 open alert(s)")
    await page.screenshot(path=artifacts / "hosts-desktop.png", full_page=True)

    await page.get_by_role("link", name="Alerts", exact=True).click()
    open_list = page.get_by_role("list", name="Open alerts")
    await expect(open_list.locator("li.alert")).to_have_count(2)
    assert await open_list.locator("li.alert").evaluate_all("els => els.map(e => e.dataset.alert)") == [
        "a-stall", "a-cpu"]  # newest first
    await expect(open_list.locator("[data-alert='a-stall']")).to_contain_text("What to do")
    await expect(open_list.locator("[data-alert='a-stall'] a")).to_have_attribute("href", "#/job/01JSTALLEDJOB")
    await expect(page.get_by_role("list", name="Resolved alerts").locator("li.alert")).to_have_count(1)
    await page.get_by_role("button", name="Notify me of new alerts on this device").click()
    await expect(page.locator(".notify")).to_contain_text("notifications of new alerts are on")
    await page.screenshot(path=artifacts / "alerts-desktop.png", full_page=True)

    hot = ev.AlertRaised(alert_id="a-hot", rule="gpu_hot", target_kind="host", target="box", value=88.0,
                         threshold=85.0, message="gpu_temperature_c 88.0 > 85 for 60s", raised_at=utcnow())
    await stack.log.append("alert", "a-hot", [hot])
    await stack.projected()
    await page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")  # the strip looks again now
    await expect(page.locator(".health")).to_contain_text("3 open alert(s)")
    await page.wait_for_function("window.__notes.length > 0")
    notes = await page.evaluate("window.__notes")
    assert [n["title"] for n in notes] == ["stoker: gpu_hot on box"] and "airflow" in notes[0]["body"]

    phone = await sign_in(browser, stack.url, stack.tokens["admin"], **PHONE, color_scheme="dark")
    await phone.goto(f"{stack.url}/#/hosts")
    await expect(phone.locator("article.host[data-host='box'] svg.spark polyline")).to_have_count(4)
    assert await phone.evaluate("document.documentElement.scrollWidth") <= 390
    await phone.screenshot(path=artifacts / "hosts-phone-dark.png", full_page=True)
    await phone.goto(f"{stack.url}/#/alerts")
    await expect(phone.get_by_role("list", name="Open alerts").locator("li.alert")).to_have_count(3)
    await phone.screenshot(path=artifacts / "alerts-phone-dark.png", full_page=True)
    assert page.errors == [] and phone.errors == []
    await page.context.close()
    await phone.context.close()
