cat > out/questions.jsonl <<'EOF'
{"question": "Which ocean does the Amazon River flow into?", "context": "The Amazon River in South America is the largest river in the world by the volume of water it discharges. It flows through Peru, Colombia and Brazil and empties into the Atlantic Ocean."}
{"question": "When did Marie Curie win her first Nobel Prize?", "context": "Marie Curie was a Polish and naturalised-French physicist and chemist who conducted pioneering research on radioactivity. She won her first Nobel Prize, in physics, in 1903, and her second, in chemistry, in 1911."}
{"question": "Who created the Python programming language?", "context": "Python is a high-level, general-purpose programming language. It was created by Guido van Rossum and first released in 1991."}
{"question": "How many bridges cross the Amazon River?", "context": "The Amazon River in South America is the largest river in the world by the volume of water it discharges. It flows through Peru, Colombia and Brazil and empties into the Atlantic Ocean."}
EOF
printf '%s\n' "The weather was so cold that the schools stayed closed." "How can I improve my English writing skills?" \
    "The company reported a sharp rise in profits this quarter." > out/sources.txt
