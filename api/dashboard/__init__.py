"""The web dashboard: one page at ``/`` that is a client of the REST API under /api/v1.

The page itself holds no data: everything it shows comes from /api/v1 calls made by the browser with the API
key the person entered, so it can show nothing the API would refuse (the API's own auth decides). Its script,
styles and the Alpine.js library are served from this package (``static/``), as are the Swagger UI assets of
``/docs``: nothing is loaded from a CDN, since QBM often runs on machines without internet access.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Flask, Response, render_template

STATIC_URL = "/dashboard/static"
ALPINE = "vendor/alpinejs-3.17.5/alpine.min.js"
SWAGGER_UI_DIR = "vendor/swagger-ui-dist-5.35.0/"
#: flask-smorest's OPENAPI_SWAGGER_UI_URL: /docs loads swagger-ui.css and its scripts from here.
SWAGGER_UI_URL = f"{STATIC_URL}/{SWAGGER_UI_DIR}"

_HERE = Path(__file__).resolve().parent

blp = Blueprint("dashboard", __name__, static_folder=str(_HERE / "static"), static_url_path=STATIC_URL,
                template_folder=str(_HERE / "templates"))


@blp.route("/")
def page() -> Response:
    """The dashboard's single page (no data in it: the browser fetches everything from /api/v1)."""
    html = render_template("dashboard.html", static=STATIC_URL, alpine=ALPINE)
    response = Response(html, mimetype="text/html")
    response.headers["Cache-Control"] = "no-cache"
    # Everything the page loads or calls is on this server; the policy says so to the browser too.
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; script-src 'self' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    )
    return response


def register(app: Flask) -> None:
    app.register_blueprint(blp)
