"""REST/JSON proxy for the SMS Leads XML API."""
