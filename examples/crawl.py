"""A fan-out/fan-in job: pages crawled in parallel lanes, each a nested machine, then a join.

Run it embedded, with no server: `.venv/bin/python examples/crawl.py`.
"""

from flou_grpc import LTM, Runtime


class Fetch(LTM):
    name = "fetch"

    def run(self, **payload):
        page = self.parent.params["page"]  # the lane's param, from `page_{page}`
        self.update_state({"url": f"https://example.com/{page}"})
        self.transition("fetched")  # namespace: the enclosing machine, `crawl.page_<page>`


class Parse(LTM):
    name = "parse"

    def run(self, **payload):
        page = self.parent.params["page"]
        self.root.atomic_state_append("pages", page)  # immediate and atomic: lanes share it
        self.parent.transition("page_done_{page}", params=[{"page": page}])


class Page(LTM):
    name = "page_{page}"  # one instance per lane: page_a, page_b, ...
    init = [Fetch]
    transitions = [{"from": Fetch, "label": "fetched", "to": Parse}]


class Plan(LTM):
    name = "plan"

    def run(self, pages):
        self.transition("crawl_{page}", params=[{"page": p} for p in pages])


class Report(LTM):
    name = "report"

    def run(self, **payload):
        self.root.update_state({"done": True})


class Crawl(LTM):
    """Crawl pages in parallel lanes, then report once every lane is done."""

    name = "crawl"
    init = [Plan]
    transitions = [
        {"from": Plan, "label": "crawl_{page}", "to": Page},  # fork: one lane per params map
        {"from": Page, "label": "page_done_{page}", "to": Report, "join": "all"},
    ]

    def get_initial_state(self):
        return {"pages": [], "done": False}


def main() -> None:
    with Runtime(machines=[Crawl]) as runtime:
        instance = runtime.start("crawl", {"pages": ["a", "b", "c"]})
        final = runtime.settle(instance.id)
        print(final.status, final.active_states)
        print(sorted(final.state["pages"]), final.state["done"])
        print(final.state["page_b"]["fetch"])


if __name__ == "__main__":
    main()
