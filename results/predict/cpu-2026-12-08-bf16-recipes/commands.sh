python predict.py squad --model out/squad-recipe/checkpoint --input out/questions.jsonl --null-threshold 6
echo "Him and me went to the store yesterday." | python predict.py cola --model out/cola-recipe/checkpoint
python predict.py paraphrase --model out/paraphrase-recipe/checkpoint --input out/sources.txt --num-beams 4 \
    --no-repeat-ngram-size 3 --max-target-length 64 --num-return-sequences 2 --output out/paraphrases.jsonl
