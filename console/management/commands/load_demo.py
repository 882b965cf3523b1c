from django.core.management.base import BaseCommand

from console.demo import load_demo


class Command(BaseCommand):
    help = "Create the demo services, flows and the analytics quota (idempotent)."

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("--driver", choices=["process", "docker", "swarm"], default="process")

    def handle(self, *args, **options) -> None:
        done = load_demo(options["driver"])
        self.stdout.write("\n".join(f"created {d}" for d in done) if done else "demo already loaded")
