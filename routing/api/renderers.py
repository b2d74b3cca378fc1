"""The routes file as an API answer: YAML by default, JSON on request."""

import json

from rest_framework.renderers import BaseRenderer
from rest_framework.utils.encoders import JSONEncoder

from routing.routes_file import dump_routes


class YAMLRenderer(BaseRenderer):
    media_type = "application/yaml"
    format = "yaml"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        # An answer of DRF's own (an error's detail strings) in plain values first.
        plain = json.loads(json.dumps(data, cls=JSONEncoder))
        return dump_routes(plain).encode(self.charset)
