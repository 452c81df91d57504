"""The parts of a SigOps process, each built in its own module; `bot.app` lists them."""
