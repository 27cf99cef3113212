"""The support-chat texts of the search benchmarks: a message generator (10-40 words, order codes, products,
plans) and the 16 support-style queries."""

from __future__ import annotations

import numpy as np

_OPEN = ["Hi,", "Hello,", "Hey there,", "Good morning,", "Thanks for getting back to me.", "Quick question:", ""]
_ASK = [
    "I was charged twice for order {code} and would like a refund",
    "my package for order {code} still has not arrived after {n} days",
    "I cannot log in to my account since I reset my password yesterday",
    "the {product} I bought stopped working after {n} days",
    "can you change the delivery address on order {code} to my office",
    "how do I cancel my {plan} subscription before the next billing date",
    "the invoice for {month} shows the wrong VAT number for our company",
    "I would like to upgrade from the {plan} plan to the annual one",
    "the tracking page says delivered but nothing was left at the door",
    "my discount code {promo} is rejected at checkout",
    "the app crashes every time I open the settings page on my {device}",
    "I received the wrong colour of the {product} in my last order",
    "is it possible to return the {product} without the original box",
    "two-factor authentication codes never reach my phone",
    "our team needs {n} more seats on the {plan} plan this month",
]
_ANSWER = [
    "I am sorry about that, I have issued a refund of {amount} to your card",
    "I checked order {code} and the courier expects to deliver it within {n} days",
    "I have sent a password reset link to the email address on your account",
    "please try restarting the {product} and holding the power button for ten seconds",
    "the delivery address on order {code} has been updated",
    "your {plan} subscription is cancelled and you will not be billed again",
    "I have corrected the invoice for {month} and attached the new copy",
    "you can upgrade any time from the billing page, the difference is prorated",
    "I have opened an investigation with the courier, reference {code}",
    "the code {promo} expired last week, but I applied a ten percent discount instead",
    "a fix for the crash on {device} is in the next app update",
    "we will ship the right colour today and send a prepaid label for the return",
    "returns without the box are fine within thirty days of delivery",
    "I have switched your two-factor codes to the authenticator app",
    "I have added {n} seats, the invoice will follow at the end of the month",
]
_CLOSE = ["Thanks!", "Let me know if anything else comes up.", "Is there anything else I can help with?",
          "Have a nice day.", "Thank you for your patience.", ""]  # fmt: skip
_FILL = {
    "product": ["wireless headphones", "smart kettle", "standing desk", "espresso machine", "robot vacuum",
                "fitness tracker", "e-reader", "bluetooth speaker", "office chair", "air purifier"],
    "plan": ["Starter", "Team", "Business", "Enterprise", "Pro"],
    "device": ["iPhone", "Android tablet", "Pixel phone", "Windows laptop", "Mac"],
    "month": ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October"],
    "promo": ["SPRING10", "WELCOME5", "BLACKFRIDAY", "LOYAL20", "FREESHIP"],
}  # fmt: skip
QUERIES = [
    "refund charged twice", "package not arrived", "cannot log in after password reset", "cancel subscription",
    "wrong VAT number on invoice", "discount code rejected", "app crashes on settings page", "return without box",
    "two-factor codes not received", "add more seats", "change delivery address", "espresso machine stopped working",
    "upgrade to annual plan", "courier investigation", "wrong colour shipped", "order A-10234",
]  # fmt: skip


def message_text(rng: np.random.Generator, role: str) -> str:
    """A support-chat message of about 10-40 words (a customer's question, or an agent's answer)."""

    def fill(template: str) -> str:
        slots = {k: v[int(rng.integers(len(v)))] for k, v in _FILL.items()}
        return template.format(
            code=f"A-{int(rng.integers(10_000, 99_999))}", n=int(rng.integers(2, 15)),
            amount=f"${int(rng.integers(5, 400))}.{int(rng.integers(0, 99)):02d}", **slots,
        )  # fmt: skip

    pool = _ASK if role == "user" else _ANSWER
    parts = [_OPEN[int(rng.integers(len(_OPEN)))], fill(pool[int(rng.integers(len(pool)))]) + "."]
    while len(" ".join(parts).split()) < 18 and rng.random() < 0.7:
        more = fill(pool[int(rng.integers(len(pool)))])
        parts.append(more[0].upper() + more[1:] + ".")
    parts.append(_CLOSE[int(rng.integers(len(_CLOSE)))])
    return " ".join(p for p in parts if p)
