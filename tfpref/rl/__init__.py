"""The pieces of online RL and preference fine-tuning below the objectives: KL estimators and the
KL controller, rollouts, and the frozen reference policy."""
