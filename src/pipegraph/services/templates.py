"""Stage templates from common sales processes, selectable when creating a pipeline.

Probabilities are starting points (chance of eventually winning a lead standing in the stage);
calibration from history replaces them once a pipeline has some.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StageSpec:
    name: str
    probability: float | None = None
    target_days: int | None = None
    exit_criteria: str = ""
    is_post_sale: bool = False


@dataclass(frozen=True, slots=True)
class Template:
    key: str
    name: str
    description: str
    stages: tuple[StageSpec, ...]


TEMPLATES: dict[str, Template] = {
    t.key: t
    for t in (
        Template(
            "GENERAL_B2B",
            "General B2B",
            "A general business-to-business process from first contact to follow-up after the sale.",
            (
                StageSpec("Lead Generation", 0.05, 14, "Contact identified and reachable"),
                StageSpec("Lead Qualification", 0.10, 10, "BANT criteria checked"),
                StageSpec("Needs Assessment", 0.25, 14, "Problem, stakeholders and budget understood"),
                StageSpec("Proposal", 0.45, 14, "Proposal sent"),
                StageSpec("Negotiation", 0.65, 21, "Terms agreed in principle"),
                StageSpec("Closing", 0.85, 10, "Contract signed"),
                StageSpec("Post-Sale Follow-Up", None, 30, "Customer onboarded", is_post_sale=True),
            ),
        ),
        Template(
            "CLASSIC",
            "Classic seven-step",
            "Prospecting through customer retention.",
            (
                StageSpec("Prospecting", 0.05, 14),
                StageSpec("Qualifying", 0.12, 10),
                StageSpec("Contacting", 0.20, 10),
                StageSpec("Relationship Building", 0.35, 30),
                StageSpec("Negotiation", 0.60, 21),
                StageSpec("Closing", 0.85, 10),
                StageSpec("Customer Retention", None, 90, is_post_sale=True),
            ),
        ),
        Template(
            "SOFTWARE",
            "Software sales",
            "Demo and trial led software sales.",
            (
                StageSpec("Lead Qualification", 0.10, 7),
                StageSpec("Product Demo", 0.25, 14, "Demo held with the decision maker"),
                StageSpec("Trial Use", 0.40, 30, "Trial account active"),
                StageSpec("Feedback Collection", 0.55, 10, "Trial feedback reviewed"),
                StageSpec("License Agreement", 0.80, 14, "License signed"),
                StageSpec("Onboarding", None, 30, is_post_sale=True),
            ),
        ),
        Template(
            "REAL_ESTATE",
            "Real estate",
            "From first enquiry to the closing agreement.",
            (
                StageSpec("Enquiry", 0.05, 7),
                StageSpec("Property Viewing", 0.20, 14),
                StageSpec("Offer Submission", 0.45, 7),
                StageSpec("Home Inspection", 0.70, 14),
                StageSpec("Closing Agreement", 0.90, 30),
            ),
        ),
        Template(
            "ECOMMERCE",
            "E-commerce recovery",
            "Recovering abandoned carts.",
            (
                StageSpec("Cart Abandonment", 0.05, 1),
                StageSpec("Follow-Up Email", 0.12, 3),
                StageSpec("Discount Offer", 0.25, 5),
                StageSpec("Purchase Completion", 0.90, 2),
                StageSpec("Repeat Purchase", None, 60, is_post_sale=True),
            ),
        ),
    )
}
