"""An OpenAI-compatible HTTP server for llamalite models, with a chat page.

    python -m llamalite.server --model smollm2-135m-instruct --model_alias smol
    llamalite serve --config models.yaml

Needs the `server` extra: pip install 'llamalite[server]'."""
