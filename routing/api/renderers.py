"""The routes file as an API answer: YAML by default, JSON on request."""

from rest_framework.renderers import BaseRenderer

from routing.routes_file import dump_routes


class YAMLRenderer(BaseRenderer):
    media_type = "application/yaml"
    format = "yaml"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return dump_routes(data).encode(self.charset)
