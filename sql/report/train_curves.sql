-- Report: the training curves of every model, one row per model and epoch.
-- psla sql --file sql/report/train_curves.sql --root R
SELECT model, epoch, train_loss, eval_loss, map, lr
FROM ${train_metrics}
ORDER BY model, epoch;
