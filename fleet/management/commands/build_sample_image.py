from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from fleet.sample.image import ImageBuildError, build_sample_image


class Command(BaseCommand):
    help = "Build the sample service's image FROM scratch with busybox-static (no registry needed)."

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("--tag", default=settings.HMS_SAMPLE_IMAGE, help="image tag (HMS_SAMPLE_IMAGE)")

    def handle(self, *args, **options) -> None:
        try:
            image_id = build_sample_image(options["tag"])
        except ImageBuildError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"built {options['tag']} ({image_id[:19]})")
