"""Which completion rule applies to a series: its sender's, its routes', or the node's.

The calling AE's ``senders`` entry wins (it knows how that sender behaves); otherwise the routes that match
the series' first instance and set ``completion`` (the most cautious of them); otherwise ``node.completion``.
"""

from __future__ import annotations

from collections.abc import Callable

from pydicom.dataset import Dataset

from node.config import CompletionConfig, CompletionOverride, Settings
from node.route.rules import route_series


def most_cautious(rules: list[CompletionConfig]) -> CompletionConfig:
    """One rule that waits at least as long as each of ``rules``: quiet if any is, the longest times."""
    return CompletionConfig(
        mode="quiet" if any(rule.mode == "quiet" for rule in rules) else "association",
        settle_seconds=max(rule.settle_seconds for rule in rules),
        quiet_seconds=max(rule.quiet_seconds for rule in rules),
    )


class CompletionPolicy:
    """The completion rules of one configuration."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.default = settings.node.completion
        self.by_sender = {s.ae_title: s.completion.over(self.default) for s in settings.senders if s.completion}
        self.route_rules = {r.name: r.completion for r in settings.routes if r.completion is not None}

    def all_rules(self) -> list[CompletionConfig]:
        return [self.default, *self.by_sender.values(), *(o.over(self.default) for o in self.route_rules.values())]

    def shortest_wait(self) -> float:
        """The least time after its last instance at which any rule may declare a series complete."""
        return min(rule.settle_seconds if rule.mode == "association" else rule.quiet_seconds
                   for rule in self.all_rules())

    def for_series(self, calling_ae_title: str | None, called_ae_title: str | None,
                   first_header: Callable[[], Dataset | None]) -> CompletionConfig:
        """The rule of a series sent by ``calling_ae_title`` to ``called_ae_title``; ``first_header`` reads its
        first instance, only when routes set rules of their own."""
        sender_rule = self.by_sender.get((calling_ae_title or "").strip())
        if sender_rule is not None:
            return sender_rule
        if not self.route_rules:
            return self.default
        header = first_header()
        if header is None:
            return most_cautious(self.all_rules())  # unreadable: assume the most cautious of the routes
        decision = route_series(self.settings.routes, header, called_ae_title, calling_ae_title)
        overrides: list[CompletionOverride] = [
            self.route_rules[v.route.name] for v in decision.matched if v.route.name in self.route_rules
        ]
        if not overrides:
            return self.default
        return most_cautious([override.over(self.default) for override in overrides])
