"""Headless Chromium loads a frame through WADO-RS with a patient token, as a patient viewer would.

The patient opens the link on the web site (which sets the patient cookie); then a page of the DICOMweb origin
fetches frames with the token as a bearer credential and with the cookie alone, splits the multipart answer in
JavaScript and draws the frame. Its pixels must be the stored ones; another study stays out of reach.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from pydicom import dcmread

from webui.dicomweb import create_dicomweb_app
from webui.server import WebServer

from conftest import HOST

pytestmark = pytest.mark.browser

#: Fetch a URL, split its multipart/related answer, return the first part's bytes as an array of numbers.
FETCH_FRAME = """async ([url, token]) => {
  const headers = {Accept: 'multipart/related; type="application/octet-stream"'};
  if (token) headers.Authorization = 'Bearer ' + token;
  const reply = await fetch(url, {headers, credentials: 'include'});
  if (!reply.ok) return {status: reply.status, detail: (await reply.json()).detail};
  const type = reply.headers.get('Content-Type');
  const boundary = type.match(/boundary=([^;]+)/)[1];
  const body = new Uint8Array(await reply.arrayBuffer());
  const text = new TextDecoder('latin1').decode(body);
  const start = text.indexOf('\\r\\n\\r\\n') + 4;
  const end = text.indexOf('\\r\\n--' + boundary, start);
  const frame = body.slice(start, end);
  const values = new Uint16Array(frame.buffer, frame.byteOffset, frame.length / 2);
  // Draw it: 12-bit values to grey.
  const side = Math.round(Math.sqrt(values.length));
  const canvas = document.createElement('canvas');
  canvas.width = canvas.height = side;
  const ctx = canvas.getContext('2d');
  const image = ctx.createImageData(side, side);
  for (let i = 0; i < values.length; i++) {
    const grey = Math.min(255, values[i] >> 4);
    image.data.set([grey, grey, grey, 255], i * 4);
  }
  ctx.putImageData(image, 0, 0);
  canvas.style.width = canvas.style.height = '384px';
  document.body.replaceChildren(canvas);
  return {status: reply.status, type, values: Array.from(values)};
}"""


def test_patient_viewer_loads_a_frame_with_its_token(live: Any, browser: Any, shot: Any) -> None:
    site = live()
    env = site.env
    server = WebServer(create_dicomweb_app(env.site), HOST, 0, threads=4)
    server.start()
    try:
        ct, mr = env.studies["ct"], env.studies["mr"]
        token = env.token("ct")
        instance = env.site.dicomweb.instances(ct)[0]
        frame_url = (
            f"{server.url}/dicom-web/studies/{ct}/series/{instance.series_uid}/instances/{instance.sop_uid}/frames/1"
        )
        context = browser.new_context()
        page = context.new_page()
        page.goto(f"{site.url}/token?{token}")  # the patient's link: sets the patient cookie
        page.wait_for_url("**/study")
        page.goto(f"{server.url}/dicom-web/studies/{ct}/thumbnail")  # a page of the DICOMweb origin
        stored = dcmread(env.app.file_path(instance)).pixel_array.ravel().tolist()
        with_token = page.evaluate(FETCH_FRAME, [frame_url, token])
        assert with_token["status"] == 200 and with_token["type"].startswith("multipart/related")
        assert with_token["values"] == stored
        shot(page, "dicomweb-patient-frame", full_page=False)
        with_cookie = page.evaluate(FETCH_FRAME, [frame_url, ""])  # the patient cookie alone
        assert with_cookie["status"] == 200 and with_cookie["values"] == stored
        other = env.site.dicomweb.instances(mr)[0]
        refused = page.evaluate(
            FETCH_FRAME,
            [
                f"{server.url}/dicom-web/studies/{mr}/series/{other.series_uid}/instances/{other.sop_uid}/frames/1",
                token,
            ],
        )
        assert refused["status"] == 404 and mr in refused["detail"]
        assert np.array(with_token["values"]).std() > 0  # a real picture, not a blank frame
        context.close()
        rows = env.site.audit.entries(study_uid=ct, action="dicomweb.frames")
        assert len(rows) == 2 and {r.actor for r in rows} == {"patient"}
    finally:
        server.stop()
