"""Support-chat conversations for the search tests (tests/test_search.py).

Each end user's messages are grouped into threads; every message is one turn (the fake
upstream adds an assistant reply of ``w0 w1 ...`` words). Every end user has at most one
message per topic, so "the right message" for a paraphrased question in that user's
scope is unambiguous. ``dave`` holds many near-identical password messages: the
crowding test checks that ``carol``'s single one is still found.
"""

from __future__ import annotations

# account -> end user -> threads (lists of user messages); None = a standard key without an end user.
CORPUS: dict[str, dict[str | None, list[list[str]]]] = {
    "A": {
        "alice": [
            [
                "The blender I bought last week arrived with a cracked jug and I would like a refund to my credit card.",
                "My order ORD-48213 still shows as processing after nine days, when will it be dispatched?",
                "Could you change the delivery address on my next shipment to 14 Harbour Street, Leith?",
            ],
            [
                "I need a proper VAT invoice for my company accounts, the receipt email is not enough.",
                "Please cancel my monthly coffee subscription starting next month.",
                "The discount code SPRING25 was rejected at checkout although it has not expired.",
            ],
            [
                "Is there a way to pay in three instalments instead of all at once?",
                "The instruction manual is only in German, do you have an English version?",
            ],
        ],
        "bob": [
            [
                "My parcel was marked as delivered but nothing was left at my door or with my neighbours.",
                "I was charged twice for the same purchase on my bank statement, please fix the double charge.",
                "Can I swap the blue jacket for a larger size, the medium is too tight on the shoulders?",
            ],
            [
                "Order ORD-48214 arrived but one of the two lamps is missing from the box.",
                "How long does international shipping to Canada usually take?",
                "The app keeps crashing whenever I open the order history page on my phone.",
            ],
            [
                "I would like to close my account and have all my personal data deleted.",
                "Do you offer gift wrapping for birthday presents?",
            ],
        ],
        "carol": [
            [
                "I forgot my password and the reset link you emailed me has already expired.",
                "The wireless headphones stopped charging after two weeks, is this covered by the warranty?",
                "Can you send me a copy of the invoice for order ORD-51999 as a PDF?",
            ],
            [
                "Your courier left the fridge outside in the rain, the packaging is soaked.",
                "I want to downgrade my plan from premium to basic at the end of this billing cycle.",
            ],
        ],
        "dave": [
            [
                "I cannot log in, my password reset email never arrives in my inbox.",
                "The password reset page says my token is invalid every time I try.",
                "I reset my password but the new password is not accepted at login.",
                "Password reset keeps failing, I have requested the email five times.",
                "Help, I am locked out of my account after too many wrong password attempts.",
            ],
            [
                "The reset password link redirects me to the home page instead of the form.",
                "My password reset code expired before I could use it, please send another.",
                "I changed my password yesterday and today it says the password is wrong.",
                "Is there a way to reset my password without access to my old email address?",
                "The password reset email went to spam and now the link does not work.",
            ],
            [
                "After the password reset I still cannot sign in to the mobile app.",
                "Why does the password reset form reject passwords with special characters?",
                "I never asked for a password reset but I got three reset emails today.",
                "My password reset confirmation never came through, what should I do?",
                "Please reset my password manually, the automatic reset does not work for me.",
            ],
            [
                "The two-factor code and the password reset both fail on my account.",
                "Password reset link opens a blank page on Safari.",
                "Can support reset my password over the phone instead?",
                "My reset password email contains a broken link.",
                "The site says the password reset was successful but login still fails.",
            ],
        ],
        None: [
            [
                "Our team needs to add three more seats to the business plan before Friday.",
                "The API rate limit error appears even though we send only ten requests a minute.",
                "Please send the quarterly invoice to accounts-payable at our finance department.",
            ],
        ],
    },
    "B": {
        "erin": [
            [
                "My package has been stuck in transit for ten days and the tracking has not updated.",
                "I returned the shoes two weeks ago, when will the refund show up on my card?",
                "The coffee machine leaks water from the bottom whenever I make an espresso.",
            ],
            [
                "Can I pick up my order from the store instead of having it delivered?",
                "I received someone else's order, it has a different name on the label.",
                "Please cancel order ORD-77120, I placed it by mistake.",
            ],
        ],
        "frank": [
            [
                "I was promised a callback about my complaint but nobody has phoned me.",
                "Your website will not accept my postcode when I try to check out.",
                "I need to update the credit card on file for my recurring payment.",
            ],
            [
                "The sofa was delivered with a torn cushion, can you replace it?",
                "I forgot my password and now I cannot see my order status.",
                "Do you price match if I find the same television cheaper elsewhere?",
            ],
        ],
    },
}

# The threads answered by test-claude (the rest by test-gpt): (account, end user, thread index).
CLAUDE_THREADS = {("A", "alice", 1), ("A", "bob", 2), ("B", "erin", 1)}

# Stored after a pause, to test from_ms / to_ms: (account, end user) -> messages of one new thread.
LATE = {
    ("A", "alice"): ["My replacement blender also arrived broken, this is the second time."],
    ("A", "bob"): ["The missing lamp from my earlier order has still not been sent."],
}
