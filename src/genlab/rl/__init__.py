"""RLHF mathematics: advantages, KL estimators/controllers, PPO and preference losses, sampling."""
