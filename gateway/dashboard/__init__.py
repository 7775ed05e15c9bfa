"""The spend dashboard: a static page served at ``/dashboard`` that signs in with a tenant key
and reads and edits through the admin API (``/api/client/v1``) in the browser. No business
rules here: the page shows what the API answers, the API decides."""
